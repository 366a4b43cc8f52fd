// The model in service: loaded from the registry's CURRENT pointer, checked against the feature definitions, and
// swapped without a restart when CURRENT changes. A new session is built completely before the reference moves;
// requests hold the model they started with, and an old session is released once its last request finishes.
import * as ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import type { FeatureSet } from '../features/compile.ts';
import { checkContract, clickProbabilities, readContract } from '../model/contract.ts';
import type { ModelRegistry } from '../model/registry.ts';
import type { ScoringMetrics } from './metrics.ts';

export class ServedModel {
  private inFlight = 0;
  private retired = false;

  constructor(
    readonly version: string,
    private readonly session: ort.InferenceSession,
    /** The output holding the click probability (contract.ts `clickOutputOf`). */
    private readonly output: string,
  ) {}

  /** A model ready to score, once its contract matches the definitions: what serving and `models register` run. */
  static async load(version: string, bytes: Uint8Array, features: FeatureSet): Promise<ServedModel> {
    const contract = readContract(bytes);
    checkContract(contract, features);
    // One thread per run: a ranking's batch is small, and a thread pool per request only contends with the
    // other requests (and the machine's other work) for cores.
    const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    return new ServedModel(version, session, contract.output);
  }

  /** Holds the model for one request (from its start, so a swap meanwhile cannot release it): pair with `done`. */
  acquire(): this {
    this.inFlight++;
    return this;
  }

  done(): void {
    // A failed release only leaks the old session; it must not fail the request that happened to finish last.
    if (--this.inFlight === 0 && this.retired) this.session.release().catch(() => {});
  }

  /** pCTR for `rows` vectors of `width` features laid out one after another in `batch`: one ONNX run. */
  async score(batch: Float32Array, rows: number, width: number): Promise<Float32Array> {
    // Fetching only the probability spares a converted classifier's label output.
    const out = await this.session.run({ features: new ort.Tensor('float32', batch, [rows, width]) }, [this.output]);
    const t = out[this.output] as ort.Tensor;
    return clickProbabilities(t.data as Float32Array, t.dims, rows);
  }

  /** Out of service: released now if idle, else when its last request is done. */
  async retire(): Promise<void> {
    this.retired = true;
    if (this.inFlight === 0) await this.session.release();
  }
}

export interface ModelRuntimeOptions {
  /** How often CURRENT is checked for a promotion or rollback. */
  pollMs: number;
}

export class ModelRuntime {
  private served: ServedModel | undefined;
  /** The last version refused, and why: not retried until CURRENT points elsewhere. */
  private refused: { version: string; reason: string } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> = Promise.resolve();

  constructor(
    private readonly registry: ModelRegistry,
    private readonly features: FeatureSet,
    private readonly metrics: ScoringMetrics,
    private readonly log: Logger,
    private readonly options: ModelRuntimeOptions = { pollMs: 1000 },
  ) {}

  /** The model requests should use now; undefined until one has loaded. */
  get model(): ServedModel | undefined {
    return this.served;
  }

  /** Why the version CURRENT names is not in service, if it was refused. */
  get refusal(): { version: string; reason: string } | undefined {
    return this.refused;
  }

  /** Loads the current model (if any) and starts watching CURRENT. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.options.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.checking;
    await this.served?.retire();
    this.served = undefined;
  }

  /** Checks CURRENT once and swaps if it names another acceptable model. Never throws. */
  refresh(): Promise<void> {
    // One check at a time: a slow load must not race the next poll.
    this.checking = this.checking.then(() => this.check());
    return this.checking;
  }

  private async check(): Promise<void> {
    let version: string | null;
    try {
      version = await this.registry.current();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot read the current model pointer');
      return;
    }
    if (version === null || version === this.served?.version || version === this.refused?.version) return;
    try {
      const next = await ServedModel.load(version, await this.registry.read(version), this.features);
      const previous = this.served;
      this.served = next;
      this.refused = undefined;
      this.metrics.modelSwaps.inc();
      this.metrics.modelInfo.reset();
      this.metrics.modelInfo.set({ version }, 1);
      this.log.info({ version, previous: previous?.version }, 'model in service');
      await previous?.retire();
    } catch (err) {
      const reason = (err as Error).message;
      this.refused = { version, reason };
      this.metrics.modelRefusals.inc();
      this.log.error({ version, reason, serving: this.served?.version ?? null }, 'model refused');
    }
  }
}
