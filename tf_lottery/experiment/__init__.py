"""An experiment folder: its layout, its files, its tables, and the one reader of them.

Nothing in this package imports TensorFlow: reports, exports and branches read
experiments through it while runs are still training.
"""
