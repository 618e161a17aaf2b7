"""The static HTML report: a view model of stored records, session reconstruction, the search index, transcripts, rendering."""
