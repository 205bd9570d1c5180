"""Every GLSL source of gpu_seg, as ``.glsl`` package files (loaded by :mod:`gpu_seg.gl.programs`)."""
