"""The paper's numbers for the tables `ppid reproduce` runs (PPID-IM, Composition-1K / AIM).

Values as printed: SAD, Grad and Conn in thousands (the DIM benchmark's /1000), MSE as a mean.
Tables 1 and 3 are whole-image metrics per group; Tables 4 and 6 are transition-region metrics on
the whole test set. A value the extracted paper text leaves unreadable is None (Table 3, IndexNet
with SD: only four of its twelve numbers survive, and only the first one's column is certain).
"""

METRICS = ("sad", "mse", "grad", "conn")
GROUPS = ("transparent", "non-transparent", "all")


def _grouped(*values):
    """12 numbers in the paper's column order -> {group: {metric: value}}."""
    return {g: dict(zip(METRICS, values[4 * i : 4 * i + 4])) for i, g in enumerate(GROUPS)}


def _whole_set(*values):
    return {"all": dict(zip(METRICS, values))}


TABLE1 = {  # rows: teacher (with trimap), baseline (trimap-free), ppid
    "dim": {
        "teacher": _grouped(80.01, 0.013, 44.28, 69.98, 41.05, 0.006, 27.16, 44.74, 50.40, 0.008, 31.00, 50.80),
        "baseline": _grouped(134.00, 0.027, 74.29, 105.09, 93.33, 0.018, 57.65, 82.54, 103.09, 0.020, 61.64, 87.95),
        "ppid": _grouped(101.27, 0.017, 60.50, 70.05, 87.64, 0.013, 51.17, 69.53, 93.80, 0.014, 53.46, 69.70),
    },
    "indexnet": {
        "teacher": _grouped(61.73, 0.007, 27.18, 50.13, 39.96, 0.004, 25.38, 36.45, 45.80, 0.005, 25.90, 43.70),
        "baseline": _grouped(122.08, 0.023, 67.48, 74.11, 57.08, 0.008, 36.70, 58.79, 72.68, 0.012, 44.08, 62.47),
        "ppid": _grouped(63.08, 0.009, 33.07, 52.18, 43.69, 0.005, 25.59, 38.39, 48.35, 0.006, 27.39, 41.70),
    },
    "gca": {
        "teacher": _grouped(47.98, 0.005, 19.32, 40.02, 27.31, 0.002, 12.38, 24.57, 32.27, 0.003, 14.04, 28.28),
        "baseline": _grouped(105.99, 0.022, 62.30, 70.41, 64.53, 0.010, 37.07, 53.87, 74.48, 0.013, 43.13, 57.84),
        "ppid": _grouped(78.11, 0.013, 46.82, 68.25, 50.70, 0.007, 32.93, 49.28, 57.27, 0.009, 36.90, 53.83),
    },
}

_IDX_SD = {g: dict.fromkeys(METRICS) for g in GROUPS}
_IDX_SD["transparent"]["sad"] = 80.62

TABLE3 = {  # rows: ALD without semantic distillation ("noclsd"), SD + ALD ("sd"), CLSD + ALD ("ppid")
    "dim": {
        "noclsd": _grouped(116.23, 0.024, 70.11, 85.73, 90.82, 0.017, 55.32, 71.93, 96.92, 0.019, 58.87, 75.24),
        "sd": _grouped(103.28, 0.020, 66.82, 70.29, 89.24, 0.015, 54.81, 70.46, 92.61, 0.016, 57.69, 70.42),
        "ppid": TABLE1["dim"]["ppid"],
    },
    "indexnet": {
        "noclsd": _grouped(104.34, 0.021, 67.52, 72.58, 55.37, 0.008, 29.05, 56.44, 67.12, 0.012, 38.28, 60.31),
        "sd": _IDX_SD,
        "ppid": TABLE1["indexnet"]["ppid"],
    },
    "gca": {
        "noclsd": _grouped(103.72, 0.020, 63.52, 69.06, 62.01, 0.010, 36.85, 49.89, 72.02, 0.012, 43.25, 54.49),
        "sd": _grouped(84.26, 0.018, 61.66, 68.87, 55.81, 0.009, 34.53, 49.71, 62.64, 0.011, 41.04, 54.31),
        "ppid": TABLE1["gca"]["ppid"],
    },
}

_NOALD = {
    "dim": _whole_set(120.08, 0.027, 80.76, 109.25),
    "indexnet": _whole_set(70.59, 0.025, 69.88, 70.56),
    "gca": _whole_set(114.37, 0.027, 78.14, 108.98),
}
_ALD = {
    "dim": _whole_set(51.68, 0.015, 30.40, 51.75),
    "indexnet": _whole_set(55.39, 0.017, 39.02, 56.11),
    "gca": _whole_set(51.67, 0.014, 28.62, 49.28),
}

TABLE4 = {  # rows: CLSD without local distillation ("noald"), CLSD + LD ("ld"), CLSD + ALD ("ppid")
    "dim": {"noald": _NOALD["dim"], "ld": _whole_set(60.19, 0.020, 45.56, 66.24), "ppid": _ALD["dim"]},
    "indexnet": {"noald": _NOALD["indexnet"], "ld": _whole_set(58.72, 0.021, 43.65, 61.95), "ppid": _ALD["indexnet"]},
    "gca": {"noald": _NOALD["gca"], "ld": _whole_set(56.02, 0.018, 37.25, 57.40), "ppid": _ALD["gca"]},
}

TABLE6 = {  # rows: no L_ALD ("noald"), L^f only ("ald_f"), L^a only ("ald_a"), both ("ppid")
    "dim": {"noald": _NOALD["dim"], "ald_f": _whole_set(57.22, 0.017, 38.23, 59.61),
            "ald_a": _whole_set(78.39, 0.019, 54.81, 72.05), "ppid": _ALD["dim"]},
    "indexnet": {"noald": _NOALD["indexnet"], "ald_f": _whole_set(60.40, 0.019, 46.81, 61.01),
                 "ald_a": _whole_set(66.87, 0.023, 58.43, 65.29), "ppid": _ALD["indexnet"]},
    "gca": {"noald": _NOALD["gca"], "ald_f": _whole_set(58.06, 0.017, 41.77, 60.90),
            "ald_a": _whole_set(66.15, 0.022, 56.25, 63.57), "ppid": _ALD["gca"]},
}

PAPER = {1: TABLE1, 3: TABLE3, 4: TABLE4, 6: TABLE6}
