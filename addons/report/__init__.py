"""The static HTML report of a recording store (`gatehouse report`); `build.build_report` is the entry.

index.py copies the records into a scratch index, sessions.py reconstructs each session into the
view model (views.py), render.py writes the pages and transcript.py the JSON downloads, state.py
remembers what was rendered for re-runs.
"""
