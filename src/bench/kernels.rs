//! Op kernels at Stable Diffusion shapes.
