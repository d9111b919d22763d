"""Plots and reports: PNG figures written atomically, with the headless Agg backend."""
