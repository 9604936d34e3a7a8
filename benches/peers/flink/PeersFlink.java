// The peers' workload in Apache Flink (benches/peers/README.md), on
// Flink's own Java DataStream API: a FileSource of lines, parsed once,
// event time from each reading (timestamps increase through the file),
// keyBy device, a KeyedProcessFunction with ValueState for the BĐ levels,
// SlidingEventTimeWindows (1 h every 5 min) and TumblingEventTimeWindows
// (5 min) with incremental AggregateFunctions, and a KeyedProcessFunction
// for each window series' level. Run in a local mini-cluster of
// PEERS_PARALLELISM slots (the file is one split: it is read and parsed in
// one task, as a single file is in Flink, then spread by device).
//
// Files from the environment: PEERS_READINGS, PEERS_DEVICES, PEERS_OUT.

import java.io.File;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFlatMapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.reader.TextLineInputFormat;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.core.fs.Path;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

public class PeersFlink {
    static final double RIVER_HYSTERESIS = 0.2;
    static final double RAIN_LEVEL = 10.0, RAIN_HYSTERESIS = 2.0;
    static final double SLOW_BELOW = 40.0, SLOW_MARGIN = 3.0;

    /** One reading the rules watch. */
    public static class Reading {
        public int kind; // 0 river, 1 rain, 2 traffic
        public String device;
        public long ts;
        public double value; // metres, millimetres
        public long tenthsVehicles; // traffic: speed in tenths × vehicles
        public long vehicles;

        public Reading() {}
    }

    static Map<String, double[]> riverLevels(String path) throws Exception {
        JsonNode root = new ObjectMapper().readTree(new File(path)).get("river_levels");
        Map<String, double[]> levels = new HashMap<>();
        Iterator<Map.Entry<String, JsonNode>> it = root.fields();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> e = it.next();
            JsonNode l = e.getValue();
            levels.put(e.getKey(), new double[] {l.get(0).asDouble(), l.get(1).asDouble(), l.get(2).asDouble()});
        }
        return levels;
    }

    /** A line of the file into a Reading, for the readings the rules watch. */
    public static class Parse extends RichFlatMapFunction<String, Reading> {
        final String devices;
        transient ObjectMapper json;
        transient Map<String, double[]> levels;

        Parse(String devices) {
            this.devices = devices;
        }

        @Override
        public void open(OpenContext context) throws Exception {
            json = new ObjectMapper();
            levels = riverLevels(devices);
        }

        @Override
        public void flatMap(String line, Collector<Reading> out) throws Exception {
            JsonNode r = json.readTree(line);
            Reading x = new Reading();
            x.device = r.get("device").asText();
            x.ts = Instant.parse(r.get("ts").asText()).toEpochMilli();
            JsonNode h = r.get("hydrology");
            if (h != null) {
                JsonNode level = h.get("water_level_m");
                JsonNode mm = h.get("rainfall_mm");
                if (level != null && levels.containsKey(x.device)) {
                    x.kind = 0;
                    x.value = level.asDouble();
                } else if (mm != null) {
                    x.kind = 1;
                    x.value = mm.asDouble();
                } else {
                    return;
                }
                out.collect(x);
                return;
            }
            JsonNode t = r.get("traffic");
            if (t != null && t.get("speed_kmh") != null) {
                long vehicles = 0;
                for (JsonNode c : t.get("counts")) vehicles += c.asLong();
                x.kind = 2;
                x.vehicles = vehicles;
                x.tenthsVehicles = Math.round(t.get("speed_kmh").asDouble() * 10) * vehicles;
                out.collect(x);
            }
        }
    }

    static String transition(String rule, String device, long ts, int level) {
        return "{\"rule\":\"" + rule + "\",\"device\":\"" + device + "\",\"ts\":" + ts + ",\"level\":" + level + "}";
    }

    /** The BĐ level per gauge, per reading, in keyed state. */
    public static class RiverLevel extends KeyedProcessFunction<String, Reading, String> {
        final String devices;
        transient Map<String, double[]> levels;
        transient ValueState<Integer> level;

        RiverLevel(String devices) {
            this.devices = devices;
        }

        @Override
        public void open(OpenContext context) throws Exception {
            levels = riverLevels(devices);
            level = getRuntimeContext().getState(new ValueStateDescriptor<>("level", Integer.class));
        }

        @Override
        public void processElement(Reading r, Context ctx, Collector<String> out) throws Exception {
            double[] l = levels.get(r.device);
            int current = level.value() == null ? 0 : level.value();
            int reached = 0;
            while (reached < l.length && r.value >= l[reached]) reached++;
            int next = current;
            if (reached >= current) {
                next = reached;
            } else {
                while (next > reached && r.value < l[next - 1] - RIVER_HYSTERESIS) next--;
            }
            if (next != current) {
                level.update(next);
                out.collect(transition("river_level", r.device, r.ts, next));
            }
        }
    }

    /** A window series' level: `(device, window end, value)` in, changes out. */
    public static class SeriesLevel extends KeyedProcessFunction<String, Tuple3<String, Long, Double>, String> {
        final String rule;
        transient ValueState<Integer> level;

        SeriesLevel(String rule) {
            this.rule = rule;
        }

        @Override
        public void open(OpenContext context) {
            level = getRuntimeContext().getState(new ValueStateDescriptor<>("level", Integer.class));
        }

        @Override
        public void processElement(Tuple3<String, Long, Double> w, Context ctx, Collector<String> out)
                throws Exception {
            int current = level.value() == null ? 0 : level.value();
            int next;
            if (rule.equals("rain_1h")) {
                next = w.f2 >= RAIN_LEVEL || (current == 1 && w.f2 >= RAIN_LEVEL - RAIN_HYSTERESIS) ? 1 : 0;
            } else if (current == 0) {
                next = w.f2 < SLOW_BELOW ? 1 : 0;
            } else {
                next = w.f2 >= SLOW_BELOW + SLOW_MARGIN ? 0 : 1;
            }
            if (next != current) {
                level.update(next);
                out.collect(transition(rule, w.f0, w.f1, next));
            }
        }
    }

    /** Sums rainfall. */
    public static class Sum implements AggregateFunction<Reading, Double, Double> {
        public Double createAccumulator() { return 0.0; }
        public Double add(Reading r, Double acc) { return acc + r.value; }
        public Double getResult(Double acc) { return acc; }
        public Double merge(Double a, Double b) { return a + b; }
    }

    /** Sums speed × vehicles and vehicles. */
    public static class Weighted implements AggregateFunction<Reading, long[], long[]> {
        public long[] createAccumulator() { return new long[2]; }
        public long[] add(Reading r, long[] acc) {
            acc[0] += r.tenthsVehicles;
            acc[1] += r.vehicles;
            return acc;
        }
        public long[] getResult(long[] acc) { return acc; }
        public long[] merge(long[] a, long[] b) { return new long[] {a[0] + b[0], a[1] + b[1]}; }
    }

    /** A window's total with its end, to 0.01 mm. */
    public static class RainEnd extends ProcessWindowFunction<Double, Tuple3<String, Long, Double>, String, TimeWindow> {
        public void process(String device, Context ctx, Iterable<Double> sums, Collector<Tuple3<String, Long, Double>> out) {
            double total = sums.iterator().next();
            out.collect(Tuple3.of(device, ctx.window().getEnd(), Math.round(total * 100) / 100.0));
        }
    }

    /** A window's mean speed with its end, to 0.1 km/h as ioc rounds it. */
    public static class SpeedEnd extends ProcessWindowFunction<long[], Tuple3<String, Long, Double>, String, TimeWindow> {
        public void process(String device, Context ctx, Iterable<long[]> sums, Collector<Tuple3<String, Long, Double>> out) {
            long[] s = sums.iterator().next();
            if (s[1] > 0) {
                double mean = Math.floor(s[0] / 10.0 / s[1] * 10 + 0.5) / 10;
                out.collect(Tuple3.of(device, ctx.window().getEnd(), mean));
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String readings = System.getenv("PEERS_READINGS");
        String devices = System.getenv("PEERS_DEVICES");
        String out = System.getenv("PEERS_OUT");
        int parallelism = Integer.parseInt(System.getenv().getOrDefault("PEERS_PARALLELISM", "2"));

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(parallelism);
        FileSource<String> source =
                FileSource.forRecordStreamFormat(new TextLineInputFormat(), new Path(readings)).build();
        DataStream<Reading> all = env.fromSource(source, WatermarkStrategy.noWatermarks(), "readings")
                .setParallelism(1)
                .flatMap(new Parse(devices))
                .setParallelism(1)
                .assignTimestampsAndWatermarks(WatermarkStrategy.<Reading>forMonotonousTimestamps()
                        .withTimestampAssigner((r, previous) -> r.ts))
                .setParallelism(1);

        DataStream<String> river = all.filter(r -> r.kind == 0)
                .setParallelism(1)
                .keyBy(r -> r.device)
                .process(new RiverLevel(devices));

        DataStream<String> rain = all.filter(r -> r.kind == 1)
                .setParallelism(1)
                .keyBy(r -> r.device)
                .window(SlidingEventTimeWindows.of(Duration.ofHours(1), Duration.ofMinutes(5)))
                .aggregate(new Sum(), new RainEnd())
                .keyBy(w -> w.f0)
                .process(new SeriesLevel("rain_1h"));

        DataStream<String> slow = all.filter(r -> r.kind == 2)
                .setParallelism(1)
                .keyBy(r -> r.device)
                .window(TumblingEventTimeWindows.of(Duration.ofMinutes(5)))
                .aggregate(new Weighted(), new SpeedEnd())
                .keyBy(w -> w.f0)
                .process(new SeriesLevel("traffic_slow"));

        river.union(rain, slow).writeAsText(out, FileSystem.WriteMode.OVERWRITE).setParallelism(1);
        env.execute("peers");
    }
}
