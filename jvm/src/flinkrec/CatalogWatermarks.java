package flinkrec;

import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;

/**
 * The watermarks of a source that has no event time (the catalog): none; the source is idle at every periodic emit.
 * An operator's watermark is the least of its active inputs', so the catalog, joined with the events (union,
 * two-input operator), never holds theirs back, and never moves it either: when the events are idle too, event time
 * stands still (a watermark of its own, at any value, would pass on events not yet read).
 */
public final class CatalogWatermarks<T> implements WatermarkGenerator<T> {

    /** The strategy; records keep the timestamp their source gives them (Kafka's record time). */
    public static <T> WatermarkStrategy<T> strategy() {
        return WatermarkStrategy.forGenerator(context -> new CatalogWatermarks<>());
    }

    @Override
    public void onEvent(T event, long timestamp, WatermarkOutput output) {}

    @Override
    public void onPeriodicEmit(WatermarkOutput output) {
        output.markIdle();
    }
}
