"""The one support package of the tests (registered as a pytest plugin by tests/conftest.py).

Test modules never import one another: what they share lives here.

* ``plugin``: the fixtures ``kafka_bootstrap`` (session: ``$KAFKA_BOOTSTRAP_SERVERS`` or one embedded
  broker), ``unique_name`` and ``kafka_settings``;
* ``settings``: the settings factory (``service_settings``, ``with_settings``, ``unique_name``, ``input_topic``);
* ``broker``: the test broker and its clients (``produce``, ``read_topic``, ``committed``, ``unread``,
  ``prepare_topics``, ``create_topics``, ``wait_for_state``, ``ingest_until``, ``client_config``);
* ``worker``: ``Worker``, ``python -m app run`` as a child process, and ``free_port``, ``wait_for_port``, ``http_get``;
* ``detection``: ``detect`` (the one extract-then-sequence loop, through ``app.core.Detector``),
  ``replay_ids``, ``compile_query``, the bundled rules, the event builders (``mshta_start``,
  ``mshta_inbound``, ``attack``) and times in milliseconds (``T0``, ``S``);
* ``oracle``: a naive statement of Elasticsearch's EQL sequence semantics, written without the engine;
* ``eql_oracle``: an independent interpreter of a stage's EQL tree, which ``oracle`` decides stages with;
* ``wave``: rules in the upstream layout written for the tests (``wave/``), and their attacks and near misses;
* ``schemas``: validators of schemas/ (``ALERT``, ``CANDIDATE``, ``DEAD_LETTER``, ``INPUT``);
* ``encoding``: ``escaping_dumps``, JSON with ``\\u``-escaped characters;
* ``hostile``: the table of hostile input records (``CASES``);
* ``faults``: the fault tests' tools (``TansuBroker``, ``TcpProxy``, ``SteadyLoad``, ``AlertCollector``, ...);
* ``dashboards``: the example Grafana dashboard's queries;
* ``paths``: where the repository and its fixtures are.
"""
