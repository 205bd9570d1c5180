"""``gpu-seg bench``: time gpu_seg and the code a user would otherwise write, on the same tensors.

* ``cases``: presets modelled on MediaPipe's models, the bench tensors, the output modes.
* ``runner``: what a prepared backend is (:class:`~.runner.Runner`), backend names and labels.
* ``gpu_seg_backends``: gpu_seg's own rows: GL (with and without preallocated outputs, and the
  f16/u8/channel-subset variants) and the CPU reference.
* ``peers``: the peers: OpenCV + numpy, PyTorch CPU, real MediaPipe CPU.
* ``backends``: which backends a cell times, and preparing one by name.
* ``timing``: timing a cell, the statistics, the copy bandwidth of the machine.
* ``results``: the rows of the report and their agreement with MediaPipe's semantics.
* ``goals``: the performance goals, judged from the rows.
* ``metadata``: where the figures were measured: CPU, memory, GL, versions, git commit.
* ``run``: the whole run: settings, plan, timing, and the report (a JSON-ready dict).
* ``plot``: the PNG bar chart of a report (matplotlib).

Everything optional (OpenCV, PyTorch, MediaPipe, matplotlib) is imported lazily; a backend that
cannot be imported is reported as unavailable with the reason.
"""
