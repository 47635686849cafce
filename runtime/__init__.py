"""Hand-written numerical runtime shared by the generated modules: input checks, elementwise
helpers with the correct limits at the edges, and numerical Gaussian quadrature."""
