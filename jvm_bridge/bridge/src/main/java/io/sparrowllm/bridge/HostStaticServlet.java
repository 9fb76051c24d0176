package io.sparrowllm.bridge;

import org.eclipse.jetty.servlet.DefaultServlet;
import org.eclipse.jetty.util.resource.Resource;

import java.io.IOException;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The host's static file serving (Jetty's DefaultServlet over the web root, as the host mounts it,
 * directory listings included), except that nothing inside a hidden folder is ever served: the
 * store, the old default store folder {@code <webroot>/modeldata/sparrow-llm}, the plugin's home
 * (its private folder holds the connect file, with the gateway token, and the host's log) and the
 * connect file wherever it is kept. A hidden path is answered 404, as if it did not exist, with no directory
 * listing and no welcome file.
 *
 * <p>A request path is hidden when any folder on its way, taken as written or with its symbolic
 * links resolved, is a hidden folder (or file) or lies inside one. So a link inside the store that points out
 * of it is not followed, and a link elsewhere in the web root that points into the store or the
 * home does not open it either. A hidden folder that holds the web root itself (a home holding the
 * stand-in's composed web root) hides everything in it but the web root.
 */
final class HostStaticServlet extends DefaultServlet {
    private final Path webRoot;
    private final Path realWebRoot;
    private final List<Path> hidden;

    HostStaticServlet(Path webRoot, Path... hidden) {
        this.webRoot = webRoot.toAbsolutePath().normalize();
        this.realWebRoot = BridgeConfig.resolved(this.webRoot);
        List<Path> folders = new ArrayList<>();
        for (Path folder : hidden) {
            folders.add(folder.toAbsolutePath().normalize());
        }
        this.hidden = Collections.unmodifiableList(folders);
    }

    @Override
    public Resource getResource(String pathInContext) {
        if (isHidden(pathInContext)) {
            return null;
        }
        return super.getResource(pathInContext);
    }

    /** Whether the path (as Jetty resolves it against the web root) reaches into a hidden folder. */
    boolean isHidden(String pathInContext) {
        List<Path> roots = new ArrayList<>(hidden);
        for (Path folder : hidden) {
            Path real = realPath(folder);
            if (real != null) {
                roots.add(real);
            }
        }
        Path target;
        try {
            target = webRoot.resolve(pathInContext.replaceFirst("^/+", "")).normalize();
        } catch (InvalidPathException e) {
            return true;
        }
        if (!target.startsWith(webRoot)) {
            return true;
        }
        Path walk = webRoot;
        for (Path part : webRoot.relativize(target)) {
            walk = walk.resolve(part);
            if (inside(walk, roots)) {
                return true;
            }
            Path real = realPath(walk);
            if (real == null) {
                return false; // nothing there: Jetty answers 404 anyway
            }
            if (inside(real, roots)) {
                return true;
            }
        }
        return false;
    }

    /** Inside a hidden folder, unless that folder holds the web root and the path is inside the web root. */
    private boolean inside(Path path, List<Path> roots) {
        boolean served = path.startsWith(webRoot) || path.startsWith(realWebRoot);
        for (Path root : roots) {
            boolean holdsTheWebRoot = webRoot.startsWith(root) || realWebRoot.startsWith(root);
            if (path.startsWith(root) && !(holdsTheWebRoot && served)) {
                return true;
            }
        }
        return false;
    }

    private static Path realPath(Path path) {
        try {
            return path.toRealPath();
        } catch (IOException | SecurityException e) {
            return null;
        }
    }
}
