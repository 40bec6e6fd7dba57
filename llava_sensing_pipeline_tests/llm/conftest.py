"""The request-level tests run once per API against the scripted test server, which speaks both."""

import pytest

from llava_sensing_pipeline.llm import APIS

MODEL = "smollm2:135m"
CHAT_PATHS = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}
PROBE_PATHS = {"ollama": "/api/tags", "openai": "/v1/models"}


def base_url(api: str, server) -> str:
    """The URL a client of ``api`` is given for ``server``."""
    return server.url if api == "ollama" else f"{server.url}/v1"


def make_client(api: str, server, tmp_path, **kw):
    """A client of ``api`` for ``server`` (or a URL), with a cache in ``tmp_path``, short backoff and timeout."""
    url = server if isinstance(server, str) else base_url(api, server)
    return APIS[api](host=url, model=kw.pop("model", MODEL), cache_path=str(tmp_path / "cache.sqlite"),
                     backoff_s=kw.pop("backoff_s", 0.01), timeout_s=kw.pop("timeout_s", 5.0), **kw)


@pytest.fixture(params=sorted(APIS))
def api(request) -> str:
    return request.param
