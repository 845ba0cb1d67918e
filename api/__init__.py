"""The HTTP surface: it composes plugin/, nodes/ (and later ssh/) into one aiohttp app."""
