// Where the test servers listen: the services' defaults unless the environment moves them.
export const KAFKA_BROKERS = [`127.0.0.1:${process.env.KAFKA_PORT ?? '9092'}`];
export const VALKEY_URL = `redis://127.0.0.1:${process.env.VALKEY_PORT ?? '6379'}`;
export const REGISTRY_URL = `http://127.0.0.1:${process.env.REGISTRY_PORT ?? '8081'}/apis/ccompat/v7`;
