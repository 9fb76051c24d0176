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
 * store and the old default store folder {@code <webroot>/modeldata/sparrow-llm}. A hidden path is
 * answered 404, as if it did not exist, with no directory listing and no welcome file.
 *
 * <p>A request path is hidden when any folder on its way, taken as written or with its symbolic
 * links resolved, is a hidden folder or lies inside one. So a link inside the store that points out
 * of it is not followed, and a link elsewhere in the web root that points into the store does not
 * open it either.
 */
final class HostStaticServlet extends DefaultServlet {
    private final Path webRoot;
    private final List<Path> hidden;

    HostStaticServlet(Path webRoot, Path... hidden) {
        this.webRoot = webRoot.toAbsolutePath().normalize();
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

    private static boolean inside(Path path, List<Path> roots) {
        for (Path root : roots) {
            if (path.startsWith(root)) {
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
