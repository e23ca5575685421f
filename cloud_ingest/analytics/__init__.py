"""Aggregate clinical analytics: pure functions over a patient's readings (numpy/scipy).

PEF diaries (:mod:`.pef_diary`), CGM consensus metrics and the AGP (:mod:`.cgm_metrics`), home
BP and kiosk visit summaries (:mod:`.bp`). No I/O, no storage, no web framework: the CLIs, the
service and the web UI call them with readings they loaded. Defaults come from
:mod:`device_profiles.clinical` (value, unit and source of every figure).
"""
