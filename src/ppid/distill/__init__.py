"""The PPID distillation modules: GC block (eq. 2), CLSD (eq. 3-4) and ALD (eq. 5-9)."""
