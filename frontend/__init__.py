"""GenScope dashboard: HTML pages, plotly figures built from reports, static assets."""
