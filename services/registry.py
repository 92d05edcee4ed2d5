"""Every Portico service, in start order: the one place that lists them.

Config, the runner, ``portico setup`` / ``portico up``, the Procfile and the deployment
checks read this tuple (kit/registry.py says what each field means).
"""

from kit.registry import Service

SERVICES = (
    Service(
        "gateway", "services.gateway.service:GatewayService", port=8080, public=True, blobs="rw"
    ),
    Service("quotes", "services.quotes.service:QuotesService", port=8081),
    Service("notify", "services.notify.service:NotifyService", port=8082, blobs="ro"),
)
