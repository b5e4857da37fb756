"""Operator tools: the live UI, status, doctor, bench and soak."""
