"""Internals of the synthetic MIS: reference tables, the school model, its generators."""
