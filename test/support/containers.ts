// The same servers through testcontainers, for machines with a Docker engine (a laptop). Imported lazily: the
// package is optional and some releases fail to import on Node 20. Not exercised on Docker-less CI machines.

export async function startContainers(): Promise<() => Promise<void>> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const kafkaPort = Number(process.env.KAFKA_PORT ?? 9092);
  const valkey = await new GenericContainer('valkey/valkey:8').withExposedPorts(6379).start();
  // Kafka advertises the host port it is reached on, so it is bound to the same fixed port on both sides.
  const kafka = await new GenericContainer('apache/kafka:4.1.1')
    .withExposedPorts({ container: kafkaPort, host: kafkaPort })
    .withEnvironment({
      KAFKA_NODE_ID: '1',
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_LISTENERS: `PLAINTEXT://:${kafkaPort},CONTROLLER://:9093`,
      KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://127.0.0.1:${kafkaPort}`,
      KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
      KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9093',
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
    })
    .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
    .start();
  const registry = await new GenericContainer('apicurio/apicurio-registry:3.0.9')
    .withExposedPorts(8080)
    .withWaitStrategy(Wait.forHttp('/apis/ccompat/v7/subjects', 8080))
    .start();
  process.env.VALKEY_PORT = String(valkey.getMappedPort(6379));
  process.env.REGISTRY_PORT = String(registry.getMappedPort(8080));
  return async () => {
    await Promise.all([valkey.stop(), kafka.stop(), registry.stop()]);
  };
}
