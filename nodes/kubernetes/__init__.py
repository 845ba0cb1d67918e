"""NodeMaintenance custom resources in a Kubernetes cluster: the one package that imports
kubernetes_asyncio (watch cache, writes, Events, Lease election, access reviews)."""
