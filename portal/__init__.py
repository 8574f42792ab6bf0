"""The public open data portal (开放平台, 第三十条): its own process, ``govnode portal serve``.

It serves the public over HTTPS with a server certificate of its own and no client
certificate, and talks to its node only over mutual TLS with a portal certificate
(``govnode certs issue-portal``): the internet never reaches the node's gRPC port or its
database. It imports the wire stubs and the gateway, never ``node``; what it needs of the node's
own code (checking a download receipt offline) the command that starts it passes in.
"""
