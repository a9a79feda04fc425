"""The school console: web pages where a school's staff sign in and decide who sees what.

Pages are rendered on the server (Jinja2, GOV.UK Frontend) and call the same services as the
admin API (`broker/admin`), so a rule lives in one place whichever door a school uses.
"""
