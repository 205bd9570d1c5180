"""GLSL sources of gpu_seg, installed as the package ``gpu_seg.shaders`` (see gpu_seg/gl/programs.py)."""
