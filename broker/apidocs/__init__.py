"""The API's reference pages for partner developers, served by the broker itself."""
