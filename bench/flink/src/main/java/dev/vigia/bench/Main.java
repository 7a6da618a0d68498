package dev.vigia.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.serialization.SimpleStringSchema;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Vigía's unanswered-conversation alert and response-time sample (SPEC §3.2,
 * processors/src/engine/conversations.rs) as a Flink DataStream job, for measuring beside Vigía:
 * not part of the product.
 *
 * <p>Reproduced exactly for a stream delivered in event-time order without duplicates (what
 * scripts/bench-flink.sh produces): a wait starts at the first customer message after the last
 * reply or close; the first non-automated reply at or after its start yields a sample; a reply or
 * close at or before {@code deadline = start + unanswered_after} answers it in time; otherwise the
 * alert fires when the watermark reaches the deadline (an event-time timer), to the
 * conversation's latest seller or else the secretaries, and the reply or close withdraws it. A
 * reply after the deadline that arrives before the timer fired emits the alert and its withdrawal
 * together, as Vigía does; like Vigía, an event fires the deadlines its own time minus the watermark
 * delay has passed before it is applied, so outputs do not depend on when watermarks move. Not
 * reproduced: Vigía's corrections for late and out-of-order events,
 * de-duplication, per-tenant thresholds (one threshold for all tenants), alert and sample ids.
 */
public final class Main {
  static final ObjectMapper JSON = new ObjectMapper();

  /** Process CPU when the first record was read, for events per CPU-second net of start-up. */
  static final AtomicBoolean FIRST = new AtomicBoolean(true);

  static volatile long firstRecordCpuTicks = -1;
  static volatile long firstRecordWallMs = -1;

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = Args.parse(argv);
    String brokers = args.getOrDefault("brokers", "127.0.0.1:9092");
    String events = Args.required(args, "events");
    String notifications = Args.required(args, "notifications");
    String samples = Args.required(args, "samples");
    long unansweredAfterMs = Long.parseLong(args.getOrDefault("unanswered-after-ms", "20000"));
    long watermarkDelayMs = Long.parseLong(args.getOrDefault("watermark-delay-ms", "1000"));
    boolean bounded = Boolean.parseBoolean(args.getOrDefault("bounded", "true"));

    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
    // One Kafka partition, one core's worth: the same shape as one Vigía processor.
    env.setParallelism(1);

    var source =
        KafkaSource.<String>builder()
            .setBootstrapServers(brokers)
            .setTopics(events)
            .setGroupId("flink-" + events)
            .setStartingOffsets(OffsetsInitializer.earliest())
            .setValueOnlyDeserializer(new SimpleStringSchema());
    if (bounded) {
      // The whole pre-filled topic, then the job ends: the final watermark fires what is left,
      // as Vigía's wall clock does once it has caught up.
      source.setBounded(OffsetsInitializer.latest());
    }

    DataStream<Ev> parsed =
        env.fromSource(source.build(), WatermarkStrategy.noWatermarks(), "events")
            .map(Ev::parse)
            .name("parse")
            .assignTimestampsAndWatermarks(
                WatermarkStrategy.<Ev>forBoundedOutOfOrderness(Duration.ofMillis(watermarkDelayMs))
                    .withTimestampAssigner((e, ts) -> e.occurredAt))
            .filter(e -> e.conversation != null)
            .name("conversation events");

    OutputTag<String> sampleTag = new OutputTag<>("samples") {};
    SingleOutputStreamOperator<String> alerts =
        parsed
            .keyBy(e -> e.tenant + "/" + e.conversation)
            .process(new Conversations(unansweredAfterMs, watermarkDelayMs, sampleTag))
            .name("conversations");

    alerts.sinkTo(sink(brokers, notifications)).name("notifications");
    alerts.getSideOutput(sampleTag).sinkTo(sink(brokers, samples)).name("samples");

    long startCpu = Cpu.processTicks();
    long start = System.currentTimeMillis();
    if (bounded) {
      env.execute("vigia-conversations");
    } else {
      // Live: say when the job runs, so that the script starts the stream then.
      var job = env.executeAsync("vigia-conversations");
      while (job.getJobStatus().get() != org.apache.flink.api.common.JobStatus.RUNNING) {
        Thread.sleep(100);
      }
      System.out.println("JOB_RUNNING");
      System.out.flush();
      job.getJobExecutionResult().get();
    }
    long endCpu = Cpu.processTicks();
    long end = System.currentTimeMillis();
    // One line for scripts/bench-flink.sh.
    System.out.printf(
        "FLINK_RESULT start_cpu_ticks=%d first_record_cpu_ticks=%d end_cpu_ticks=%d"
            + " start_ms=%d first_record_ms=%d end_ms=%d clk_tck=%d%n",
        startCpu, firstRecordCpuTicks, endCpu, start, firstRecordWallMs, end, Cpu.CLK_TCK);
  }

  static KafkaSink<String> sink(String brokers, String topic) {
    return KafkaSink.<String>builder()
        .setBootstrapServers(brokers)
        .setRecordSerializer(
            KafkaRecordSerializationSchema.builder()
                .setTopic(topic)
                .setValueSerializationSchema(new SimpleStringSchema())
                .build())
        // Vigía's processors produce at least once (idempotent, acks=all) without transactions.
        .setDeliveryGuarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .setKafkaProducerConfig(producerConfig())
        .build();
  }

  static java.util.Properties producerConfig() {
    var p = new java.util.Properties();
    p.setProperty("acks", "all");
    p.setProperty("enable.idempotence", "true");
    // librdkafka's default linger, which Vigía's producer uses.
    p.setProperty("linger.ms", "5");
    return p;
  }

  /** The fields of an event that the two rules read (a Flink POJO). */
  public static final class Ev {
    public String type;
    public String eventId;
    public long tenant;
    public long occurredAt;
    public String conversation;
    /** -1 when the event names no seller. */
    public long seller = -1;
    public boolean automated;
    public String channel;

    public Ev() {}

    static Ev parse(String json) throws Exception {
      if (FIRST.getAndSet(false)) {
        firstRecordCpuTicks = Cpu.processTicks();
        firstRecordWallMs = System.currentTimeMillis();
      }
      JsonNode n = JSON.readTree(json);
      Ev e = new Ev();
      e.type = n.path("type").asText();
      e.eventId = n.path("event_id").asText();
      e.tenant = n.path("tenant_id").asLong();
      e.occurredAt = Instant.parse(n.path("occurred_at").asText()).toEpochMilli();
      switch (e.type) {
        case "message.received", "message.sent", "conversation.assigned", "conversation.closed" -> {
          e.conversation = n.path("conversation_id").asText();
          JsonNode seller = n.get("seller_id");
          if (seller != null && !seller.isNull()) {
            e.seller = seller.asLong();
          }
          e.automated = n.path("automated").asBoolean(false);
          e.channel = n.path("channel").asText(null);
        }
        default -> {}
      }
      return e;
    }
  }

  /** A customer's wait for a reply (a Flink POJO). */
  public static final class Wait {
    public String starter;
    public long startedAt;
    public long deadline;
    public String channel;
    public boolean fired;
    /** The audience the alert went to: a seller, or -1 for the secretaries. */
    public long firedTo = -1;

    public Wait() {}
  }

  static final class Conversations extends KeyedProcessFunction<String, Ev, String> {
    private final long unansweredAfterMs;
    private final long watermarkDelayMs;
    private final OutputTag<String> sampleTag;
    private transient ValueState<Long> seller;
    private transient ValueState<Wait> wait;

    Conversations(long unansweredAfterMs, long watermarkDelayMs, OutputTag<String> sampleTag) {
      this.unansweredAfterMs = unansweredAfterMs;
      this.watermarkDelayMs = watermarkDelayMs;
      this.sampleTag = sampleTag;
    }

    @Override
    public void open(OpenContext ctx) {
      seller = getRuntimeContext().getState(new ValueStateDescriptor<>("seller", Long.class));
      wait = getRuntimeContext().getState(new ValueStateDescriptor<>("wait", Wait.class));
    }

    @Override
    public void processElement(Ev e, Context ctx, Collector<String> out) throws Exception {
      // Vigía fires the deadlines an event's own time proves past (by the watermark delay)
      // before applying it; Flink's periodic watermark may lag further behind, so do the same
      // here: an assignment or reply after that point must not change or pre-empt the alert.
      Wait pending = wait.value();
      if (pending != null && !pending.fired
          && pending.deadline <= e.occurredAt - watermarkDelayMs) {
        ctx.timerService().deleteEventTimeTimer(pending.deadline);
        alert(e.tenant, e.conversation, pending, out);
        wait.update(pending);
      }
      switch (e.type) {
        case "message.received" -> {
          if (e.seller >= 0) {
            seller.update(e.seller);
          }
          if (wait.value() == null) {
            Wait w = new Wait();
            w.starter = e.eventId;
            w.startedAt = e.occurredAt;
            w.deadline = e.occurredAt + unansweredAfterMs;
            w.channel = e.channel;
            wait.update(w);
            ctx.timerService().registerEventTimeTimer(w.deadline);
          }
        }
        case "conversation.assigned" -> seller.update(e.seller);
        case "message.sent" -> {
          if (!e.automated) {
            end(e, ctx, out);
          }
        }
        case "conversation.closed" -> end(e, ctx, out);
        default -> {}
      }
    }

    /** A reply (with a sample) or a close ends the open wait. */
    private void end(Ev e, Context ctx, Collector<String> out) throws Exception {
      Wait w = wait.value();
      if (w == null || w.startedAt > e.occurredAt) {
        return;
      }
      wait.clear();
      boolean reply = e.type.equals("message.sent");
      if (reply) {
        ObjectNode s = JSON.createObjectNode();
        s.put("tenant_id", e.tenant);
        s.put("conversation_id", e.conversation);
        s.put("seller_id", e.seller);
        s.put("customer_event_id", w.starter);
        s.put("reply_event_id", e.eventId);
        s.put("waiting_since", Instant.ofEpochMilli(w.startedAt).toString());
        s.put("replied_at", Instant.ofEpochMilli(e.occurredAt).toString());
        s.put("response_seconds", (e.occurredAt - w.startedAt) / 1000.0);
        ctx.output(sampleTag, s.toString());
      }
      if (!w.fired) {
        ctx.timerService().deleteEventTimeTimer(w.deadline);
        if (e.occurredAt <= w.deadline) {
          return; // answered in time
        }
        // The deadline passed in event time before this ended the wait.
        alert(e.tenant, e.conversation, w, out);
      }
      ObjectNode n = notification(e.tenant, e.conversation, w);
      n.put("withdraws", "alert");
      n.put("created_at", Instant.ofEpochMilli(Math.max(e.occurredAt, w.deadline)).toString());
      ObjectNode data = (ObjectNode) n.get("data");
      data.put("state", reply ? "resolved" : "closed");
      data.put("resolved_at", Instant.ofEpochMilli(e.occurredAt).toString());
      if (reply) {
        data.put("resolved_by", e.seller);
      } else {
        data.putNull("resolved_by");
      }
      out.collect(n.toString());
    }

    @Override
    public void onTimer(long deadline, OnTimerContext ctx, Collector<String> out) throws Exception {
      Wait w = wait.value();
      if (w == null || w.fired || w.deadline != deadline) {
        return;
      }
      String[] key = ctx.getCurrentKey().split("/", 2);
      alert(Long.parseLong(key[0]), key[1], w, out);
      wait.update(w);
    }

    private void alert(long tenant, String conversation, Wait w, Collector<String> out)
        throws Exception {
      Long s = seller.value();
      w.fired = true;
      w.firedTo = s == null ? -1 : s;
      ObjectNode n = notification(tenant, conversation, w);
      n.put("created_at", Instant.ofEpochMilli(w.deadline).toString());
      out.collect(n.toString());
    }

    private static ObjectNode notification(long tenant, String conversation, Wait w) {
      ObjectNode n = JSON.createObjectNode();
      n.put("type", "unanswered_conversation");
      n.put("tenant_id", tenant);
      ObjectNode audience = n.putObject("audience");
      if (w.firedTo >= 0) {
        audience.put("user_id", w.firedTo);
      } else {
        audience.put("role", "secretary");
      }
      ObjectNode data = n.putObject("data");
      data.put("conversation_id", conversation);
      if (w.firedTo >= 0) {
        data.put("seller_id", w.firedTo);
      } else {
        data.putNull("seller_id");
      }
      data.put("waiting_since", Instant.ofEpochMilli(w.startedAt).toString());
      data.put("deadline", Instant.ofEpochMilli(w.deadline).toString());
      data.put("channel", w.channel);
      data.put("customer_event_id", w.starter);
      return n;
    }
  }
}
