"""The versioned dataset store: the Sample record, Delta Lake tables with lineage, diffs and releases."""
