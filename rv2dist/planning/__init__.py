"""The planner: shapes, dtypes and a memory budget in, a Plan out; never touches data."""
