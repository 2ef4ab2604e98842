package flinkrec;

import java.time.Duration;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkGeneratorSupplier;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.util.clock.RelativeClock;

/**
 * Bounded-out-of-orderness watermarks that settle when their input goes quiet.
 *
 * <p>While records come, the watermark is Flink's bounded-out-of-orderness one: the largest timestamp seen
 * ({@code maxTs}) minus the bound minus 1. Once no record with a timestamp has come for {@code settleMs}, the
 * watermark moves up to {@code maxTs} itself, and at the next periodic emit the split is marked idle: otherwise the
 * last events of a quiet stream would wait, unpassed, for a later event that may never come (downstream state
 * applies events only once the watermark passes them), and a quiet split would hold back the others. Its next record
 * makes it active again; one that has an earlier timestamp than the watermark is late. The watermark never goes
 * back. (An idle output drops the final watermark of a bounded input: {@link EndOfInputMap} sends it on.)
 *
 * <p>The splits of one source subtask share what has settled: a settled split's watermark is the largest
 * {@code maxTs} of every settled split of the subtask, not its own. The subtask's watermark is the least of its
 * active splits', so without that, the split that settles last would leave it at that split's own {@code maxTs},
 * short of the others' latest events. (Between subtasks, Flink does the same: when every input of an operator
 * is idle, its watermark is the largest of theirs.)
 *
 * <p>A split that has had no record with a timestamp at all for {@code idleMs} (0: never) is marked idle, so that
 * an empty partition does not hold the watermark back; its first record makes it active again. (Flink's
 * {@code withIdleness} is not used: wrapped around this generator it held every watermark back while a backlog was
 * read, so nothing downstream that waits for the watermark progressed until the end of input.)
 *
 * <p>A record without a timestamp ({@code Long.MIN_VALUE}: a record without a valid {@code ts}) neither moves
 * {@code maxTs} nor counts as activity. Quiet time is read on the context's input-activity clock, which stops while
 * the input is backpressured (a source that does not read is not a quiet stream), and starts at the first periodic
 * emit that sees no new record, so a settle comes after {@code settleMs} plus up to one watermark interval. One
 * generator per source split (a Kafka partition) or per subtask, as Flink creates them.
 */
public final class SettlingWatermarks<T> implements WatermarkGenerator<T> {

    private final long boundMs;
    /** 0: never settle. */
    private final long settleNanos;
    private final RelativeClock clock;
    /** The largest timestamp seen; Long.MIN_VALUE: none yet. */
    private long maxTs = Long.MIN_VALUE;
    /** The watermark emitted last (the lower bound of every later one). */
    private long emitted = Long.MIN_VALUE;
    /** Records with a timestamp, seen so far and at the last periodic emit. */
    private long seen;
    private long seenAtEmit;
    /** When the input-activity clock first saw no new record; -1 while records come. */
    private long quietSinceNanos = -1;
    /** 0: never idle. */
    private final long idleNanos;

    /** The largest {@code maxTs} of the settled splits of this subtask, shared by its generators. */
    private final long[] settled;

    SettlingWatermarks(long boundMs, long settleMs, long idleMs, RelativeClock clock) {
        this(boundMs, settleMs, idleMs, clock, new long[] {Long.MIN_VALUE});
    }

    SettlingWatermarks(long boundMs, long settleMs, long idleMs, RelativeClock clock, long[] settled) {
        this.settled = settled;
        this.boundMs = boundMs;
        this.settleNanos = Duration.ofMillis(settleMs).toNanos();
        this.idleNanos = Duration.ofMillis(idleMs).toNanos();
        this.clock = clock;
    }

    /**
     * The strategy of these watermarks ({@code boundMs}: the out-of-orderness bound; {@code settleMs}: the quiet time
     * after which the watermark reaches the largest timestamp, 0 for never); with no timestamp assigner yet.
     */
    public static <T> WatermarkStrategy<T> strategy(long boundMs, long settleMs) {
        return strategy(boundMs, settleMs, 0);
    }

    /** As {@link #strategy(long, long)}, and a split without any record for {@code idleMs} is idle (0: never). */
    public static <T> WatermarkStrategy<T> strategy(long boundMs, long settleMs, long idleMs) {
        if (boundMs < 0) {
            throw new IllegalArgumentException("max_out_of_orderness_ms " + boundMs + " must not be negative");
        }
        if (settleMs < 0) {
            throw new IllegalArgumentException("settle_ms " + settleMs + " must not be negative (0: never settle)");
        }
        if (idleMs < 0) {
            throw new IllegalArgumentException("idle_partition_ms " + idleMs + " must not be negative (0: never)");
        }
        return WatermarkStrategy.forGenerator(new Supplier<>(boundMs, settleMs, idleMs));
    }

    @Override
    public void onEvent(T event, long timestamp, WatermarkOutput output) {
        if (timestamp != Long.MIN_VALUE) {
            maxTs = Math.max(maxTs, timestamp);
            seen++;
        }
    }

    @Override
    public void onPeriodicEmit(WatermarkOutput output) {
        if (maxTs == Long.MIN_VALUE) {
            if (idleNanos > 0) {
                if (quietSinceNanos < 0) {
                    quietSinceNanos = clock.relativeTimeNanos();
                } else if (clock.relativeTimeNanos() - quietSinceNanos >= idleNanos) {
                    output.markIdle();
                    return;
                }
            }
            output.emitWatermark(new Watermark(emitted));  // as Flink's: Long.MIN_VALUE until the first timestamp
            return;
        }
        long mark = maxTs < Long.MIN_VALUE + boundMs + 1 ? Long.MIN_VALUE : maxTs - boundMs - 1;
        if (settleNanos > 0) {
            if (seen != seenAtEmit) {
                seenAtEmit = seen;
                quietSinceNanos = -1;
            } else if (quietSinceNanos < 0) {
                quietSinceNanos = clock.relativeTimeNanos();
            } else if (clock.relativeTimeNanos() - quietSinceNanos >= settleNanos) {
                settled[0] = Math.max(settled[0], maxTs);
                if (emitted >= settled[0]) {
                    output.markIdle();  // settled and passed on
                    return;
                }
                mark = settled[0];
            }
        }
        emitted = Math.max(emitted, mark);
        output.emitWatermark(new Watermark(emitted));
    }

    /** Creates a generator per split or subtask, on the context's input-activity clock. */
    static final class Supplier<T> implements WatermarkGeneratorSupplier<T> {
        private static final long serialVersionUID = 1L;
        private final long boundMs;
        private final long settleMs;
        private final long idleMs;

        Supplier(long boundMs, long settleMs, long idleMs) {
            this.boundMs = boundMs;
            this.settleMs = settleMs;
            this.idleMs = idleMs;
        }

        /** Shared by the generators of one subtask (its splits): the supplier is deserialized once per subtask. */
        private transient long[] settled;

        @Override
        public WatermarkGenerator<T> createWatermarkGenerator(Context context) {
            if (settled == null) {
                settled = new long[] {Long.MIN_VALUE};
            }
            return new SettlingWatermarks<>(boundMs, settleMs, idleMs, context.getInputActivityClock(), settled);
        }
    }
}
