"""User-study cases for tests: one orange square entity per case on noise, each with its own short path."""

import numpy as np

from tasks.user_study import write_user_study_case


def write_cases(root, names) -> None:
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        mask = np.zeros((96, 128), bool)
        y, x = 20 + (k * 7) % 50, 20 + (k * 13) % 80
        mask[y : y + 18, x : x + 18] = True
        img[mask] = (230, 120, 40)
        write_user_study_case(root / name, img, [mask], [np.array([[x + 9.0, y + 9.0], [x + 9.0 + (k % 5) * 6, y + 9.0 + (k % 3) * 4]])])
