"""Probes read one kind of signal each. A probe that cannot read raises
``ProbeError``: the sampler records that signal as *unknown* (``None``), and
unknown never counts as idle."""
