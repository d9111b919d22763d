"""Feedback beyond the gold scorers: judges behind one interface, their combination, constitutional AI."""
