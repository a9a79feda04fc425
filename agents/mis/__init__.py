"""MIS adapters: the port (`MisAdapter`) and its implementations."""

from agents.mis.base import AdapterError, MisAdapter, Record

__all__ = ["AdapterError", "MisAdapter", "Record"]
