import ai.djl.inference.Predictor;
import ai.djl.inference.streaming.ChunkedBytesSupplier;
import ai.djl.modality.Input;
import ai.djl.modality.Output;
import ai.djl.ndarray.BytesSupplier;
import ai.djl.repository.zoo.Criteria;
import ai.djl.repository.zoo.ZooModel;
import com.google.gson.Gson;
import com.google.gson.JsonObject;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * Drives DJL's published Python engine (ai.djl.python:python) the way DJL Serving's worker does:
 * Criteria loads the model folder with engine "Python" (DJL's BaseModelLoader reads its
 * serving.properties), one Predictor serves every request, concurrently, so the engine's own
 * RollingBatch batches them. This class is ours; everything it calls is DJL's.
 *
 * <p>Environment-only deployments: DJL Serving's ModelInfo (not published to the registry this
 * project reaches) turns OPTION_* variables into options for keys serving.properties lacks
 * (v0.28.0 wlm/.../ModelInfo.java:793-811); this harness does the same, and nothing else of it.
 *
 * <p>Protocol: argument 1 is the model folder, argument 2 the seconds to wait for one streamed
 * chunk. Prints "READY" once loaded (or "LOAD_FAILED ..." and exits 3). Then each stdin line is a
 * JSON request {"id", "body", "headers"}; each finished request prints one JSON line {"id",
 * "code", "message", "properties", "chunks", "error"}.
 */
public final class Harness {
    private static final Gson GSON = new Gson();
    private static final Object OUT_LOCK = new Object();

    private Harness() {}

    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        int chunkWait = Integer.parseInt(args[1]);
        Map<String, String> options = new LinkedHashMap<>();
        for (Map.Entry<String, String> e : System.getenv().entrySet()) {
            String key = e.getKey();
            if (!key.startsWith("OPTION_") || e.getValue().isEmpty()) {
                continue;
            }
            key = key.substring(7).toLowerCase(Locale.ROOT);
            if ("entrypoint".equals(key)) {
                key = "entryPoint";
            }
            if (!"engine".equals(key)) {
                options.putIfAbsent(key, e.getValue());
            }
        }
        ZooModel<Input, Output> model;
        Predictor<Input, Output> predictor;
        try {
            Criteria<Input, Output> criteria =
                    Criteria.builder()
                            .setTypes(Input.class, Output.class)
                            .optModelPath(Paths.get(args[0]))
                            .optEngine("Python")
                            .optOptions(options)
                            .build();
            model = criteria.loadModel();
            predictor = model.newPredictor();
        } catch (Exception e) {
            out.println("LOAD_FAILED " + e);
            e.printStackTrace();
            System.exit(3);
            return;
        }
        out.println("READY");
        ExecutorService pool = Executors.newCachedThreadPool();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            JsonObject req = GSON.fromJson(line, JsonObject.class);
            pool.submit(() -> answer(predictor, req, chunkWait, out));
        }
        pool.shutdown();
        pool.awaitTermination(10, TimeUnit.MINUTES);
        predictor.close();
        model.close();
        System.exit(0);
    }

    private static void answer(Predictor<Input, Output> predictor, JsonObject req, int chunkWait, PrintStream out) {
        Map<String, Object> result = new LinkedHashMap<>();
        result.put("id", req.get("id").getAsString());
        List<String> chunks = new ArrayList<>();
        try {
            Input input = new Input();
            if (req.has("headers")) {
                for (Map.Entry<String, com.google.gson.JsonElement> h : req.getAsJsonObject("headers").entrySet()) {
                    input.addProperty(h.getKey(), h.getValue().getAsString());
                }
            }
            input.add("data", req.get("body").getAsString());
            Output output = predictor.predict(input);
            BytesSupplier data = output.getData();
            if (data instanceof ChunkedBytesSupplier) {
                ChunkedBytesSupplier stream = (ChunkedBytesSupplier) data;
                while (stream.hasNext()) {
                    chunks.add(new String(stream.nextChunk(chunkWait, TimeUnit.SECONDS), StandardCharsets.UTF_8));
                }
            } else if (data != null) {
                chunks.add(data.getAsString());
            }
            result.put("code", output.getCode());
            result.put("message", output.getMessage());
            result.put("properties", output.getProperties());
        } catch (Exception e) {
            result.put("error", e.toString());
        }
        result.put("chunks", chunks);
        synchronized (OUT_LOCK) {
            out.println(GSON.toJson(result));
        }
    }
}
