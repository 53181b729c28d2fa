"""The SOC console's static files (index.html, console.js, console.css), served at ``GET /console/``
by :mod:`streams.api.server`; package data, so an installed flowbreaker has them."""
