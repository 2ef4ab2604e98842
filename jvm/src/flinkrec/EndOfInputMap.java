package flinkrec;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.StreamMap;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.watermarkstatus.WatermarkStatus;

/**
 * A map that passes the end of its input on as the end of event time, even if its input was idle.
 *
 * <p>A source split whose input has settled is marked idle ({@link SettlingWatermarks}), so that it does not hold
 * back the others. Flink drops every watermark of an idle output, including the final {@code Long.MAX_VALUE} a
 * bounded source sends when it ends: the operators downstream would never see the end of event time (no final
 * timers). Chained right after the source, this map announces its output active again and sends that final
 * watermark itself when its input ends (a bounded run's end or a drain; not a plain stop).
 */
public final class EndOfInputMap<I, O> extends StreamMap<I, O> implements BoundedOneInput {
    private static final long serialVersionUID = 1L;

    public EndOfInputMap(MapFunction<I, O> mapper) {
        super(mapper);
    }

    @Override
    public void endInput() {
        output.emitWatermarkStatus(WatermarkStatus.ACTIVE);
        output.emitWatermark(Watermark.MAX_WATERMARK);
    }
}
