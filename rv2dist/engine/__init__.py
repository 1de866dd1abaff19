"""Dask task graphs built from a Plan, their execution, and the assembly of results."""
