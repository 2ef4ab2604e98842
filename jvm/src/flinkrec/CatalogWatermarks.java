package flinkrec;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkGeneratorSupplier;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.types.Row;
import org.apache.flink.util.clock.RelativeClock;

/**
 * The watermarks of a source that has no event time (the catalog): none; the source is idle at every periodic emit.
 * An operator's watermark is the least of its active inputs', so the catalog, joined with the events (union,
 * two-input operator), never holds theirs back, and never moves it either: when the events are idle too, event time
 * stands still (a watermark of its own, at any value, would pass on events not yet read).
 *
 * <p>With targets (partition to the offset after its last record at the job's start), a split first holds event
 * time back (a watermark of {@code Long.MIN_VALUE}, active) until it has read its partition's last record at the
 * start: the catalog in the topic then is applied before any event is learned, whatever the sources' timing (the
 * learned combiner trains on rankings, which read the catalog). A split that has had no record at all for
 * {@code idleMs} (a partition with nothing left to read; 0: never, as for the events' partitions) stops holding it
 * back; so does one of a partition with no target. Records read after that change nothing (live catalog updates
 * apply on arrival). The records are {@link SourceRecords} rows: field 1 is the origin, "topic partition offset
 * [key]".
 */
public final class CatalogWatermarks implements WatermarkGenerator<Row> {

    private final Map<Integer, Long> targets;
    private final RelativeClock clock;
    private final long idleNanos;
    private boolean done;
    private boolean seen;
    private long startNanos = -1;

    CatalogWatermarks(Map<Integer, Long> targets, RelativeClock clock, long idleMs) {
        this.targets = targets;
        this.clock = clock;
        this.idleNanos = Duration.ofMillis(idleMs).toNanos();
        this.done = targets.isEmpty();
    }

    /** The strategy; records keep the timestamp their source gives them (Kafka's record time). */
    public static WatermarkStrategy<Row> strategy() {
        return strategy("", 0);
    }

    /**
     * As {@link #strategy()}, holding event time back until each split has read its partition up to its target:
     * {@code targets} "partition=end,..." (end: the offset after the partition's last record; "" for none).
     */
    public static WatermarkStrategy<Row> strategy(String targets, long idleMs) {
        Map<Integer, Long> parsed = new HashMap<>();
        for (String part : targets.split(",")) {
            if (!part.isBlank()) {
                String[] kv = part.split("=");
                parsed.put(Integer.parseInt(kv[0].trim()), Long.parseLong(kv[1].trim()));
            }
        }
        if (idleMs < 0) {
            throw new IllegalArgumentException("idle_partition_ms " + idleMs + " must not be negative (0: never)");
        }
        return WatermarkStrategy.forGenerator(new Supplier(parsed, idleMs));
    }

    @Override
    public void onEvent(Row event, long timestamp, WatermarkOutput output) {
        seen = true;
        if (done) {
            return;
        }
        String[] origin = String.valueOf(event.getField(1)).split(" ");
        if (origin.length < 3) {
            done = true;  // no origin: nothing to wait for
            return;
        }
        Long end = targets.get(Integer.parseInt(origin[1]));
        done = end == null || Long.parseLong(origin[2]) + 1 >= end;
    }

    @Override
    public void onPeriodicEmit(WatermarkOutput output) {
        // idleNanos 0: never idle (not at once: a split's first record may come after its first periodic emit)
        if (!done && !seen && idleNanos > 0) {
            if (startNanos < 0) {
                startNanos = clock.relativeTimeNanos();
            }
            done = clock.relativeTimeNanos() - startNanos >= idleNanos;
        }
        if (done) {
            output.markIdle();
        } else {
            output.emitWatermark(new Watermark(Long.MIN_VALUE));
        }
    }

    /** Creates a generator per split, on the context's input-activity clock. */
    static final class Supplier implements WatermarkGeneratorSupplier<Row> {
        private static final long serialVersionUID = 1L;
        private final HashMap<Integer, Long> targets;
        private final long idleMs;

        Supplier(Map<Integer, Long> targets, long idleMs) {
            this.targets = new HashMap<>(targets);
            this.idleMs = idleMs;
        }

        @Override
        public WatermarkGenerator<Row> createWatermarkGenerator(Context context) {
            return new CatalogWatermarks(targets, context.getInputActivityClock(), idleMs);
        }
    }
}
