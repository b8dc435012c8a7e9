"""The emulator's HTTP endpoints, one module per family; each module's `routes(emulator)` lists
its aiohttp routes. `base.serve_api` is the flow every API endpoint shares."""
