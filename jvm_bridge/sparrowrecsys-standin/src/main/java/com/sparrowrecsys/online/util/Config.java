package com.sparrowrecsys.online.util;

/**
 * TEST STAND-IN of the host's switches: same names and defaults as the host; the stand-in only
 * implements the file data source, so the Redis switches are carried but have no effect here.
 */
public class Config {
    public static final String DATA_SOURCE_FILE = "file";
    public static final String DATA_SOURCE_REDIS = "redis";

    public static String EMB_DATA_SOURCE = DATA_SOURCE_FILE;
    public static boolean IS_LOAD_USER_FEATURE_FROM_REDIS = false;
    public static boolean IS_LOAD_ITEM_FEATURE_FROM_REDIS = false;
    public static boolean IS_ENABLE_AB_TEST = false;
}
