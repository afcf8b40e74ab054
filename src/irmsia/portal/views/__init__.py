"""The portal's routers, one per area; ``irmsia.portal.web.install`` includes them in order."""
