"""The budget allocator's parts: formulas, costs, difficulty, profiles, plans, decision, stores, calibration.

`strategies/allocator.py` is the `auto` strategy that puts them together.
"""
