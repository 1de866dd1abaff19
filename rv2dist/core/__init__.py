"""Pure mathematics on in-memory arrays (numpy, CuPy, array API): kernels, measures, significance.

No dask, no files."""
