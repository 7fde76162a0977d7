"""The admin process: the monitoring HTTP endpoints, served by uvicorn + starlette."""
