"""Compiled (Cython) hot loops.

Private: call them through the typed wrappers in the public modules. Each kernel has a pure-numpy
reference in `ztfsds._ext.reference` that the tests compare it with on random input.
"""
