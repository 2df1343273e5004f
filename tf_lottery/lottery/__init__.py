"""The IMP experiment: levels x variants x replicates, resumable, and its files."""
