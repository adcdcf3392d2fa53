"""`tunegate demo`: serve the demo model and tunes on loopback and say how to call them."""

from __future__ import annotations

import threading
import time
import urllib.request

__all__ = ["DEMO_KEY", "banner", "watch_ready"]

# Demo only, loopback only: its SHA-256 is in policies/tenants.yaml (documented in README.md).
DEMO_KEY = "tg-demo-loopback-only"


def banner(host: str, port: int) -> str:
    base = f"http://{host}:{port}/v1"
    return f"""
Tunegate is ready on http://{host}:{port}  (Ctrl-C stops it)

  Demo tenant API key (demo only, loopback only): {DEMO_KEY}
  Models: tunegate-demo-base, support, legal, extract   ("default" = the tenant's tune)

  curl {base}/chat/completions \\
    -H "Authorization: Bearer {DEMO_KEY}" -H "Content-Type: application/json" \\
    -d '{{"model": "legal", "temperature": 0,
         "messages": [{{"role": "user", "content": "Can I cancel my contract early?"}}]}}'

  # A redacted stream: the support tune answers with a contact address; the demo tenant's
  # policy (policies/tenants.yaml) redacts e-mail addresses in answers, also mid-stream.
  curl -N {base}/chat/completions \\
    -H "Authorization: Bearer {DEMO_KEY}" -H "Content-Type: application/json" \\
    -d '{{"model": "support", "stream": true, "temperature": 0,
         "messages": [{{"role": "user", "content": "How can I contact you?"}}]}}'

  python - <<'PY'
  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="{DEMO_KEY}")
  for tune in ("support", "legal", "extract"):
      r = client.chat.completions.create(model=tune, temperature=0, messages=[
          {{"role": "user", "content": "My order has not arrived yet. What should I do?"}}])
      print(tune, "->", r.choices[0].message.content)
  PY
"""


def watch_ready(host: str, port: int, timeout: float = 600.0) -> threading.Thread:
    """Print the banner once `/readyz` answers 200 (the engine is warm)."""

    def run() -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{host}:{port}/readyz"
        print(
            f"Starting the engine (this takes about half a minute) on {host}:{port} ...", flush=True
        )
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        print(banner(host, port), flush=True)
                        return
            except OSError:
                pass
            time.sleep(0.5)
        print("The engine did not become ready; see the log above.", flush=True)

    thread = threading.Thread(target=run, name="demo-ready", daemon=True)
    thread.start()
    return thread
