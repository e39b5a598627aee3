"""The on-instance agent: probes -> Sample -> reduce -> ActivityReport -> publish."""
