"""The Messages API on the wire: JSON body rules, header allowlists, SSE, the per-flow stream pipeline, API error bodies."""
