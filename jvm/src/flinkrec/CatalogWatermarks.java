package flinkrec;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;

/**
 * The watermarks of a source that has no event time (the catalog): Long.MAX_VALUE - 1 at every periodic emit, so a
 * stream joined with the events (union, two-input operator) never holds their watermark back. A source without
 * watermarks would: an operator's watermark is the least of its inputs', and one that never sends any keeps it at
 * Long.MIN_VALUE, so no event-time timer fires. Not Long.MAX_VALUE: that is the end of a bounded input, which fires
 * the end-of-input timers (at Long.MAX_VALUE) of the operators downstream of this source alone.
 */
public final class CatalogWatermarks<T> implements WatermarkGenerator<T> {

    /** The watermark: after every event time, short of the end of input. */
    public static final long MARK = Long.MAX_VALUE - 1;

    /** The strategy; records keep the timestamp their source gives them (Kafka's record time). */
    public static <T> WatermarkStrategy<T> strategy() {
        return WatermarkStrategy.forGenerator(context -> new CatalogWatermarks<>());
    }

    @Override
    public void onEvent(T event, long timestamp, WatermarkOutput output) {}

    @Override
    public void onPeriodicEmit(WatermarkOutput output) {
        output.emitWatermark(new Watermark(MARK));
    }
}
