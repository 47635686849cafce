"""Hand-written numerical runtime shared by the generated modules: input checks, elementwise
helpers with the correct limits at the edges, and numerical Gaussian quadrature."""
from runtime import allocator as _allocator

_allocator.keep_freed_memory()
