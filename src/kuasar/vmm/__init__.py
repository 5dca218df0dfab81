"""Our own virtual devices for real guests: a virtio-vsock device over vhost-user (issue 10).

Layer contract: beside ``kuasar.sandbox``, below ``kuasar.ctl``; imports ``kuasar.errors``,
``kuasar.config``, ``kuasar.address``, ``kuasar._log`` and the sans-IO CONNECT line parser of
``kuasar.transport``; never ``kuasar.ctl``, ``kuasar.agent``, ``kuasar.guest`` or
``kuasar.sandbox``. Nothing is imported here: take the submodule you need.

============================  ===================================================================
module                        what
============================  ===================================================================
:mod:`.vhost_user`            sans-IO vhost-user codec and ``Connection`` (feed bytes+fds → requests)
:mod:`.backend`               sans-IO request handling: features, memory table, vrings, config
:mod:`.virtqueue`             sans-IO split-ring walker over guest memory buffers
:mod:`.vsock_packet`          the 44-byte virtio-vsock header
:mod:`.vsock_conn`            one stream's state and credit, both ways
:mod:`.vsock_device`          the hybrid-vsock muxer (``CONNECT <port>`` → ``OK <host_port>``)
:mod:`._memory`               ``mmap`` of the memory table (IO)
:mod:`._host`                 the hybrid socket's listener and host client sockets (IO)
:mod:`.vsock_server`          the device process: a ``selectors`` driver (IO), ``main()``
:mod:`.testing`               the guest's side of a split ring, for tests (sans-IO)
============================  ===================================================================
"""
